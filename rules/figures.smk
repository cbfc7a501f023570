# Figures from the tables only (never from data, checkpoints or training): Figs. 3-5 and 6-10.


rule plot_task_grid:
    input:
        runs=res("tables/runs.csv"),
        baseline=res("tables/baseline.csv"),
    output:
        pdf=res("figures/{stem}.pdf"),
        png=report(
            res("figures/{stem}.png"),
            category="Figures",
            caption="../workflow/report/fig_task_grid.rst",
        ),
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
        pdf=res("figures/{stem}.pdf"),
        png=report(
            res("figures/{stem}.png"),
            category="Figures",
            caption="../workflow/report/fig_cost.rst",
        ),
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
        pdf=res("figures/{stem}.pdf"),
        png=report(
            res("figures/{stem}.png"),
            category="Validation curves",
            caption="../workflow/report/fig_val_curves.rst",
        ),
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
