"""Operations: metrics, health, roles, audit, logs, trace."""
