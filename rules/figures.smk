# Figures from the tables only (never from data, checkpoints or training): Figs. 3-5 and 6-10.


rule plot_task_grid:
    input:
        runs=res("tables/runs.csv"),
        baseline=res("tables/baseline.csv"),
    output:
        pdf=report(res("figures/{stem}.pdf"), category="Figures"),
        png=res("figures/{stem}.png"),
    log:
        res("logs/figures/{stem}.log"),
    wildcard_constraints:
        stem="fig3|fig4",
    conda:
        "../envs/vlpeft.yaml"
    params:
        fig=figure_params,
    script:
        "../workflow/scripts/plot_figure.py"


rule plot_cost:
    input:
        runs=res("tables/runs.csv"),
        baseline=res("tables/baseline.csv"),
    output:
        pdf=report(res("figures/{stem}.pdf"), category="Figures"),
        png=res("figures/{stem}.png"),
    log:
        res("logs/figures/{stem}.log"),
    wildcard_constraints:
        stem="fig5|fig5_gpu_hours",
    conda:
        "../envs/vlpeft.yaml"
    params:
        fig=figure_params,
    script:
        "../workflow/scripts/plot_figure.py"


rule plot_val_curves:
    input:
        runs=res("tables/runs.csv"),
        curves=res("tables/curves.csv"),
        baseline=res("tables/baseline.csv"),
    output:
        pdf=report(res("figures/{stem}.pdf"), category="Validation curves"),
        png=res("figures/{stem}.png"),
    log:
        res("logs/figures/{stem}.log"),
    wildcard_constraints:
        stem="fig6_prompt|fig7_prefix|fig8_lora|fig9_serial_adapter|fig10_parallel_adapter",
    conda:
        "../envs/vlpeft.yaml"
    params:
        fig=figure_params,
    script:
        "../workflow/scripts/plot_figure.py"
