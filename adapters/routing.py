"""Routing by account: orders of paper accounts go to the paper broker, every
other order to the real venue, whatever broker the adapter was started with.

Paper accounts are the shadow accounts (`paper:<strategy>`) and those listed
in TRADEFLOW_PAPER_ACCOUNTS (Settings.paper_accounts). A paper order never
reaches the venue and a real account's order never reaches the paper book:
the account decides, not the order's fate so far. cancel and order_history
name only the order, so its account comes from account_of (the accepted
orders table); an order whose account is unknown is unknown to both.
"""
from __future__ import annotations

from collections.abc import Callable, Collection

from adapters.broker import Broker, BrokerError, MalformedReport
from adapters.orders import Order, OrderEvent, is_shadow


class RoutingBroker:
    def __init__(self, venue: Broker, paper: Broker, paper_accounts: Collection[str],
                 account_of: Callable[[str], str | None]) -> None:
        self.venue = venue
        self.paper = paper
        self.paper_accounts = frozenset(paper_accounts)
        self._account_of = account_of
        self._accounts: dict[str, str] = {}

    def is_paper(self, account_id: str) -> bool:
        return is_shadow(account_id) or account_id in self.paper_accounts

    def broker_for(self, client_order_id: str) -> Broker:
        account = self._accounts.get(client_order_id) or self._account_of(client_order_id)
        if account is None:
            raise BrokerError(f"unknown client_order_id {client_order_id}", retryable=False)
        return self.paper if self.is_paper(account) else self.venue

    def submit(self, order: Order) -> OrderEvent:
        self._accounts[order.client_order_id] = order.account_id
        return (self.paper if self.is_paper(order.account_id) else self.venue).submit(order)

    def cancel(self, client_order_id: str) -> OrderEvent:
        return self.broker_for(client_order_id).cancel(client_order_id)

    def poll_events(self) -> list[OrderEvent]:
        return self.paper.poll_events() + self.venue.poll_events()

    def poll_malformed(self) -> list[MalformedReport]:
        return self.paper.poll_malformed() + self.venue.poll_malformed()

    def order_history(self, client_order_ids: list[str]) -> list[OrderEvent]:
        paper, venue = [], []
        for coid in client_order_ids:
            (paper if self.broker_for(coid) is self.paper else venue).append(coid)
        return (self.paper.order_history(paper) if paper else []) + (self.venue.order_history(venue) if venue else [])
