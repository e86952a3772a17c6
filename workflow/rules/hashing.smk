# Hashing stage: one rule per entry of lthash.workflow.TRAINING, named after it: the shared
# pretraining rule (balanced shards of one source) and every arm (balanced, longtail,
# class_balanced, logit_adjusted, resampled, augmented, pretrain_only, mix_only), each job
# once per seed of experiment.seeds (hashing.seed). Group, mode, initial model
# and shards all come from the table; the params are exactly what lthash.workflow.READS says
# the arm reads.

MODEL = lw.MODEL


for arm in lw.TRAINING.values():

    rule:
        name:
            arm.name
        input:
            split=rules.split.output.split,
            shards=partial(arm_shards, arm),
            init=partial(arm_init, arm),
        output:
            model=directory(f"{R}/{arm.folder}/{MODEL}/{lw.RUN_MODEL}"),
        log:
            f"{R}/logs/train/{arm.folder}/{MODEL}.log",
        benchmark:
            f"{R}/benchmarks/train/{arm.folder}/{MODEL}.tsv"
        priority: 10 if arm.name == lw.PRETRAIN_NAME else 5 if arm.init else 0
        conda:
            ENV
        threads: 1
        resources:
            **HEAVY,
            mem_mb=8000,
            runtime=480 if arm.mode == "synthetic" else 240,
        params:
            config=partial(arm_params, arm),
            tags=partial(arm_tags, arm),
            group=arm.group,
            mode=arm.mode,
        shell:
            "lthash train --split {input.split} --group {params.group} --mode {params.mode}"
            " --synthetic {input.shards} --init {input.init} --out {output.model}"
            " --params {params.config} {params.tags} --threads {threads} 2> {log}"
