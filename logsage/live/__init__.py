"""Live use of the rules: `watch` follows a growing log and advises at each new evaluation;
`decide` is the framework-free live decision that `logsage train` and the drop-in callbacks
(`logsage.integrations`) share."""
