"""``toolkit study``: the SimSiam paper's ablation grid, outcome rules and report."""
