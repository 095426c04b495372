"""The one-run GPU check (check.sh -> check.py); see benchmarks/README.md."""
