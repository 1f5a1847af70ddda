"""The public HTTP side: one-click unsubscribe links (RFC 8058) and the pages behind them."""
