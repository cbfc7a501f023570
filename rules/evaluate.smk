# Evaluation of the untuned initial model: the reference every fine-tuned run is compared with.


rule evaluate_baseline:
    input:
        unpack(baseline_inputs),
    output:
        res("baseline/{task}.json"),
    log:
        res("logs/evaluate/baseline_{task}.log"),
    benchmark:
        res("benchmarks/evaluate/baseline_{task}.tsv")
    conda:
        "../envs/vlpeft.yaml"
    threads: 1
    params:
        run=baseline_config,
    script:
        "../workflow/scripts/evaluate_baseline.py"
