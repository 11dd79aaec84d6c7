"""Dashboard pages: each reads run directories through lab.runs and draws with lab.viz."""
