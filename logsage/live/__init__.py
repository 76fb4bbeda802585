"""Live use of the rules: `watch` follows a growing log and advises at each new evaluation."""
