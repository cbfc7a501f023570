# Figures from the tables only (never from data, checkpoints or training): Figs. 3-5 and 6-10. Which figures exist,
# their builders and inputs: vlpeft.plots.registry. One rule per report caption (a report() caption cannot be a
# function), each drawing the stems the registry gives that caption.


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
        stem="|".join(figreg.stems(caption="fig_task_grid")),
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
        stem="|".join(figreg.stems(caption="fig_cost")),
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
        stem="|".join(figreg.stems(caption="fig_val_curves")),
    conda:
        "../envs/vlpeft.yaml"
    params:
        fig=figure_params,
    script:
        "../workflow/scripts/plot_figure.py"
