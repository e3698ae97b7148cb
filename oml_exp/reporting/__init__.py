"""Reports, one job a module: report.py a run's summary and its experiment id; table.py the sweep table (one row per
run, seed statistics per condition); plots.py and markdown.py drawn from that table's CSV; sweep.py the sweep report
(the CSV, Markdown and PNGs in one folder); loggers.py and wandb_log.py the loggers that `logger._target_` names."""
