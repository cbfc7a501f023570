# Real data: verified, resumable downloads (URLs and checksums from the config), then unpacking with file counts.


rule download_file:
    output:
        "results/data/downloads/{file}",
    log:
        "results/logs/download/{file}.log",
    conda:
        "../envs/vlpeft.yaml"
    resources:
        downloads=1,
    params:
        spec=download_spec,
        checksums="results/data/downloads/checksums.txt",
    script:
        "../workflow/scripts/download.py"


rule unpack_coco_images:
    input:
        train="results/data/downloads/train2014.zip",
        val="results/data/downloads/val2014.zip",
    output:
        touch("results/data/raw/images/.complete"),
    log:
        "results/logs/download/unpack_coco_images.log",
    conda:
        "../envs/vlpeft.yaml"
    params:
        expected={
            "train": config["data"]["downloads"]["train2014.zip"].get(
                "expected_files"
            ),
            "val": config["data"]["downloads"]["val2014.zip"].get("expected_files"),
        },
    script:
        "../workflow/scripts/unpack.py"


rule unpack_karpathy:
    input:
        "results/data/downloads/caption_datasets.zip",
    output:
        "results/data/raw/dataset_coco.json",
    log:
        "results/logs/download/unpack_karpathy.log",
    conda:
        "../envs/vlpeft.yaml"
    params:
        member="dataset_coco.json",
    script:
        "../workflow/scripts/unpack_member.py"


rule unpack_vqa:
    input:
        expand(
            "results/data/downloads/v2_{kind}_{part}_mscoco.zip",
            kind=["Questions", "Annotations"],
            part=["Train", "Val"],
        ),
    output:
        **vqa_raw_files(),
    log:
        "results/logs/download/unpack_vqa.log",
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/unpack_member.py"


rule fetch_vocab:
    input:
        "results/data/downloads/vocab.txt",
    output:
        "results/model/vocab.txt",
    log:
        "results/logs/download/fetch_vocab.log",
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/unpack_member.py"


rule fetch_checkpoint:
    input:
        "results/data/downloads/mplug_base.pth",
    output:
        "results/data/raw/mplug_base.pth",
    log:
        "results/logs/download/fetch_checkpoint.log",
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/unpack_member.py"
