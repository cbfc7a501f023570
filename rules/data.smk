# Data: raw files (synthetic mini study or verified downloads) -> prepared records -> nested subsets -> image cache.


if SYNTHETIC:

    rule generate_synthetic_data:
        output:
            karpathy=res("data/raw/dataset_coco.json"),
            pretrain=res("data/raw/pretrain_captions.json"),
            questions=vqa_raw_files()["questions"],
            annotations=vqa_raw_files()["annotations"],
            images=touch(res("data/raw/images/.complete")),
        log:
            res("logs/data/generate_synthetic_data.log"),
        conda:
            "../envs/vlpeft.yaml"
        params:
            synthetic=config["data"]["synthetic"],
        script:
            "../workflow/scripts/generate_synthetic_data.py"

    rule train_vocab:
        input:
            karpathy=res("data/raw/dataset_coco.json"),
            pretrain=res("data/raw/pretrain_captions.json"),
        output:
            res("model/vocab.txt"),
        log:
            res("logs/data/train_vocab.log"),
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
        karpathy=res("data/raw/dataset_coco.json"),
    output:
        train=grid.records_path(ROOT, tasks.COCO.name, "train"),
        val=grid.records_path(ROOT, tasks.COCO.name, "val"),
        test=grid.records_path(ROOT, tasks.COCO.name, "test"),
    log:
        res("logs/data/prepare_captions.log"),
    conda:
        "../envs/vlpeft.yaml"
    params:
        expected=expected_counts(tasks.COCO.name),
    script:
        "../workflow/scripts/prepare_captions.py"


rule prepare_vqa:
    input:
        **vqa_raw_files(),
        karpathy=res("data/raw/dataset_coco.json"),
    output:
        train=grid.records_path(ROOT, tasks.VQA.name, "train"),
        val=grid.records_path(ROOT, tasks.VQA.name, "val"),
        test=grid.records_path(ROOT, tasks.VQA.name, "test"),
    log:
        res("logs/data/prepare_vqa.log"),
    conda:
        "../envs/vlpeft.yaml"
    params:
        expected=expected_counts(tasks.VQA.name),
    script:
        "../workflow/scripts/prepare_vqa.py"


rule make_subset:
    input:
        train=res("data/prepared/{task}/train.jsonl"),
    output:
        res("data/subsets/{task}/ratio{ratio}.json"),
    log:
        res("logs/data/make_subset/{task}_ratio{ratio}.log"),
    conda:
        "../envs/vlpeft.yaml"
    params:
        subset=subset_params,
    script:
        "../workflow/scripts/make_subset.py"


rule cache_images:
    input:
        images=res("data/raw/images/.complete"),
        records=expand(
            res("data/prepared/coco/{split}.jsonl"), split=["train", "val", "test"]
        ),
    output:
        cache=res("data/images_{size}.npy"),
        index=res("data/images_{size}.npy.index.json"),
    log:
        res("logs/data/cache_images_{size}.log"),
    benchmark:
        res("benchmarks/data/cache_images_{size}.tsv")
    conda:
        "../envs/vlpeft.yaml"
    params:
        skip_bad=config["data"].get("skip_bad_images", False),
    script:
        "../workflow/scripts/cache_images.py"
