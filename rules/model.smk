# Model inputs made once and shared by every run: the slim checkpoint (official weights, memory-mapped by each run)
# and the visual-feature store (the frozen ViT's output for every image, read by every run whose ViT is frozen).


if config["model"]["init"] == "official":

    rule convert_checkpoint:
        input:
            checkpoint=grid.official_checkpoint_path(config),
            vocab=grid.vocab_path(ROOT),
        output:
            weights=grid.slim_checkpoint_path(config),
            report=f"{grid.slim_checkpoint_path(config)}.report.txt",
        log:
            res("logs/model/convert_checkpoint.log"),
        benchmark:
            res("benchmarks/model/convert_checkpoint.tsv")
        conda:
            "../envs/vlpeft.yaml"
        params:
            model=grid.model_params(config),
        script:
            "../workflow/scripts/convert_checkpoint.py"


if FEATURES:

    rule extract_features:
        input:
            unpack(feature_inputs),
        output:
            store=FEATURES,
            index=f"{FEATURES}.index.json",
        log:
            res("logs/model/extract_features.log"),
        benchmark:
            res("benchmarks/model/extract_features.tsv")
        conda:
            "../envs/vlpeft.yaml"
        threads: 2
        resources:
            gpu=0,
        params:
            spec=feature_spec,
        script:
            "../workflow/scripts/extract_features.py"
