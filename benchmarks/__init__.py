"""`make bench`: modelreg's performance next to MLflow's registry server and the bare floors.

See benchmarks/README.md. Run with `python -m benchmarks [--only NAME] [--quick] [--no-peer]`.
"""
