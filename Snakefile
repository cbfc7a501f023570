# Reproduce "An Empirical Study of Parameter Efficient Fine-tuning on Vision-Language Pre-train Model".
# Stages: data -> subsets -> one training run per configuration -> metrics tables -> figures and report.
from snakemake.utils import min_version

min_version("9.0")


# The paper's study, unless config files are given: a --configfile replaces it rather than merging into it, so
# that the mini study or a test config cannot inherit the paper's grid.
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/model.smk"
include: "rules/cost.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/aggregate.smk"
include: "rules/figures.smk"


rule all:
    input:
        res("tables/runs.csv"),
        res("tables/curves.csv"),
        res("report.md"),
        res("report.html"),
        figure_files(),
