"""`archdsl bench`: the benchmark harness (`harness`) and its reports (`report`).

    from archdsl.bench import harness, report
    run = harness.run_bench(graph, harness.BenchConfig(batches=(32,)))   # needs a CUDA GPU
    print(report.render_text(run)); report.write_all(run, "build/bench/resnet50")

The protocol is in the harness's docstring; the JSON schema in `report`'s.
"""

from .harness import BenchConfig, BenchRun, cuda_status, distinct_convs, run_bench

__all__ = ["BenchConfig", "BenchRun", "cuda_status", "distinct_convs", "run_bench"]
