# Figures from the tables only (never from data, checkpoints or training): Figs. 3-5 and 6-10.

FIG_TASK = {"fig3": "coco", "fig4": "vqa"}
FIG_CURVE_METHOD = {
    f"fig{n}_{m}": m
    for n, m in zip(
        range(6, 11), ["prompt", "prefix", "lora", "serial_adapter", "parallel_adapter"]
    )
}


def figure_params(wildcards):
    return {"task": FIG_TASK.get(wildcards.stem), "method": FIG_CURVE_METHOD.get(wildcards.stem)}


rule plot_task_grid:
    input:
        runs="results/tables/runs.csv",
        baseline="results/tables/baseline.csv",
    output:
        pdf=report("results/figures/{stem}.pdf", category="Figures"),
        png="results/figures/{stem}.png",
    log:
        "results/logs/figures/{stem}.log",
    wildcard_constraints:
        stem="fig3|fig4",
    params:
        fig=figure_params,
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/plot_figure.py"


rule plot_cost:
    input:
        runs="results/tables/runs.csv",
        baseline="results/tables/baseline.csv",
    output:
        pdf=report("results/figures/{stem}.pdf", category="Figures"),
        png="results/figures/{stem}.png",
    log:
        "results/logs/figures/{stem}.log",
    wildcard_constraints:
        stem="fig5|fig5_gpu_hours",
    params:
        fig=figure_params,
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/plot_figure.py"


rule plot_val_curves:
    input:
        runs="results/tables/runs.csv",
        curves="results/tables/curves.csv",
        baseline="results/tables/baseline.csv",
    output:
        pdf=report("results/figures/{stem}.pdf", category="Validation curves"),
        png="results/figures/{stem}.png",
    log:
        "results/logs/figures/{stem}.log",
    wildcard_constraints:
        stem="fig6_prompt|fig7_prefix|fig8_lora|fig9_serial_adapter|fig10_parallel_adapter",
    params:
        fig=figure_params,
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/plot_figure.py"
