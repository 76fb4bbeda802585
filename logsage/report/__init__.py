"""Show it: the self-contained HTML report (inline SVG) and the same run figure as PNG (`plot`)."""
