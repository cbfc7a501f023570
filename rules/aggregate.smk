# Metric extraction: run records -> runs.csv / curves.csv / baseline.csv, and the claims report.


rule aggregate_runs:
    input:
        records=all_records(),
        baselines=baseline_files(),
    output:
        runs=res("tables/runs.csv"),
        curves=res("tables/curves.csv"),
        baseline=res("tables/baseline.csv"),
    log:
        res("logs/aggregate/aggregate_runs.log"),
    conda:
        "../envs/vlpeft.yaml"
    params:
        run_ids=sorted(RUNS),
        study=STUDY,
    script:
        "../workflow/scripts/aggregate_runs.py"


rule write_report:
    input:
        runs=res("tables/runs.csv"),
        baseline=res("tables/baseline.csv"),
    output:
        md=res("report.md"),
        html=report(
            res("report.html"),
            category="Claims",
            caption="../workflow/report/claims.rst",
        ),
    log:
        res("logs/aggregate/write_report.log"),
    conda:
        "../envs/vlpeft.yaml"
    params:
        metric=reported_metric(),
        study=STUDY,
    script:
        "../workflow/scripts/write_report.py"
