"""`mmar ablate`: the paper's ablation table, reproduced small (docs/ablations.md).

variants.py: the variants (one config switch each) and the suites; runner.py: training every
variant within one budget, evaluating each, resuming; report.py: mean and spread over seeds, the
table, the chart.
"""
