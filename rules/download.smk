# Real data: verified, resumable downloads (URLs and checksums from the config), then unpacking with file counts.
# Downloads run where Snakemake runs (the login node on a cluster: compute nodes often have no internet), into
# results/downloads/, which every study with real data shares (each file is checked against its size and checksum).


rule download_file:
    output:
        dl("{file}"),
    log:
        dl("logs/{file}.log"),
    wildcard_constraints:
        file="[^/]+",
    localrule: True
    conda:
        "../envs/vlpeft.yaml"
    resources:
        downloads=1,
    params:
        spec=download_spec,
        checksums=dl("checksums.txt"),
    script:
        "../workflow/scripts/download.py"


rule unpack_coco_images:
    input:
        train=dl("train2014.zip"),
        val=dl("val2014.zip"),
    output:
        touch(res("data/raw/images/.complete")),
    log:
        res("logs/download/unpack_coco_images.log"),
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
        dl("caption_datasets.zip"),
    output:
        res("data/raw/dataset_coco.json"),
    log:
        res("logs/download/unpack_karpathy.log"),
    conda:
        "../envs/vlpeft.yaml"
    params:
        member="dataset_coco.json",
    script:
        "../workflow/scripts/unpack_member.py"


rule unpack_vqa:
    input:
        expand(
            dl("v2_{kind}_{part}_mscoco.zip"),
            kind=["Questions", "Annotations"],
            part=["Train", "Val"],
        ),
    output:
        **vqa_raw_files(),
    log:
        res("logs/download/unpack_vqa.log"),
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/unpack_member.py"


rule fetch_vocab:
    input:
        dl("vocab.txt"),
    output:
        res("model/vocab.txt"),
    log:
        res("logs/download/fetch_vocab.log"),
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/unpack_member.py"


rule fetch_checkpoint:
    input:
        dl("mplug_base.pth"),
    output:
        res("data/raw/mplug_base.pth"),
    log:
        res("logs/download/fetch_checkpoint.log"),
    conda:
        "../envs/vlpeft.yaml"
    script:
        "../workflow/scripts/unpack_member.py"
