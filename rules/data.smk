# Data: raw files (synthetic mini study or verified downloads) -> prepared records -> nested subsets -> image cache.


if SYNTHETIC:

    rule generate_synthetic_data:
        output:
            karpathy="results/data/raw/dataset_coco.json",
            pretrain="results/data/raw/pretrain_captions.json",
            questions=vqa_raw_files()["questions"],
            annotations=vqa_raw_files()["annotations"],
            images=touch("results/data/raw/images/.complete"),
        log:
            "results/logs/data/generate_synthetic_data.log",
        conda:
            "../envs/vlpeft.yaml"
        params:
            synthetic=config["data"]["synthetic"],
        script:
            "../workflow/scripts/generate_synthetic_data.py"

    rule train_vocab:
        input:
            karpathy="results/data/raw/dataset_coco.json",
            pretrain="results/data/raw/pretrain_captions.json",
        output:
            "results/model/vocab.txt",
        log:
            "results/logs/data/train_vocab.log",
        conda:
            "../envs/vlpeft.yaml"
        params:
            vocab_size=config["tokenizer"]["vocab_size"],
        script:
            "../workflow/scripts/train_vocab.py"

else:

    include: "download.smk"


rule prepare_captions:
    input:
        karpathy="results/data/raw/dataset_coco.json",
    output:
        train=grid.records_path("coco", "train"),
        val=grid.records_path("coco", "val"),
        test=grid.records_path("coco", "test"),
    log:
        "results/logs/data/prepare_captions.log",
    conda:
        "../envs/vlpeft.yaml"
    params:
        expected=expected_counts("coco"),
    script:
        "../workflow/scripts/prepare_captions.py"


rule prepare_vqa:
    input:
        **vqa_raw_files(),
        karpathy="results/data/raw/dataset_coco.json",
    output:
        train=grid.records_path("vqa", "train"),
        val=grid.records_path("vqa", "val"),
        test=grid.records_path("vqa", "test"),
    log:
        "results/logs/data/prepare_vqa.log",
    conda:
        "../envs/vlpeft.yaml"
    params:
        expected=expected_counts("vqa"),
    script:
        "../workflow/scripts/prepare_vqa.py"


rule make_subset:
    input:
        train="results/data/prepared/{task}/train.jsonl",
    output:
        "results/data/subsets/{task}/ratio{ratio}.json",
    log:
        "results/logs/data/make_subset/{task}_ratio{ratio}.log",
    conda:
        "../envs/vlpeft.yaml"
    params:
        subset=subset_params,
    script:
        "../workflow/scripts/make_subset.py"


rule cache_images:
    input:
        images="results/data/raw/images/.complete",
        records=expand(
            "results/data/prepared/coco/{split}.jsonl", split=["train", "val", "test"]
        ),
    output:
        cache="results/data/images_{size}.npy",
        index="results/data/images_{size}.npy.index.json",
    log:
        "results/logs/data/cache_images_{size}.log",
    benchmark:
        "results/benchmarks/data/cache_images_{size}.tsv"
    conda:
        "../envs/vlpeft.yaml"
    params:
        skip_bad=config["data"].get("skip_bad_images", False),
    script:
        "../workflow/scripts/cache_images.py"
