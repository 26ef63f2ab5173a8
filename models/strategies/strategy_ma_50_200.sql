-- Golden cross (SMA 50 over SMA 200) and death cross.
{{ strategy_model('ma_50_200') }}
