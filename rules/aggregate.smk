# Metric extraction: run records -> runs.csv / curves.csv / baseline.csv, and the claims report.


rule aggregate_runs:
    input:
        records=all_records(),
        baselines=baseline_files(),
    output:
        runs="results/tables/runs.csv",
        curves="results/tables/curves.csv",
        baseline="results/tables/baseline.csv",
    log:
        "results/logs/aggregate/aggregate_runs.log",
    conda:
        "../envs/vlpeft.yaml"
    params:
        run_ids=sorted(RUNS),
    script:
        "../workflow/scripts/aggregate_runs.py"


rule write_report:
    input:
        runs="results/tables/runs.csv",
        baseline="results/tables/baseline.csv",
    output:
        md="results/report.md",
        html=report(
            "results/report.html",
            category="Claims",
            caption="../workflow/report/claims.rst",
        ),
    log:
        "results/logs/aggregate/write_report.log",
    conda:
        "../envs/vlpeft.yaml"
    params:
        metric=reported_metric(),
    script:
        "../workflow/scripts/write_report.py"
