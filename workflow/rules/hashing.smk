# Hashing stage: the control arms (balanced, longtail) train on real data; the method
# pretrains on balanced synthetic data and fine-tunes on the balanced synthetic+real mix.

MODEL = "{method}-{backbone}-{bits}"


rule train_real:
    input:
        split=rules.split.output.split,
    output:
        model=directory(f"{R}/runs/{{real_arm}}/{MODEL}/model"),
    params:
        config=run_params,
        group=lambda w: lw.ARM_GROUP[w.real_arm],
    log:
        f"{R}/logs/train/{{real_arm}}/{MODEL}.log",
    benchmark:
        f"{R}/benchmarks/train/{{real_arm}}/{MODEL}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        **HEAVY,
    shell:
        "lthash train --split {input.split} --group {params.group} --mode real"
        " --out {output.model} --params {params.config} --threads {threads} 2> {log}"


rule pretrain:
    input:
        split=rules.split.output.split,
        shards=pretrain_shards,
    output:
        model=directory(f"{R}/pretrain/{{generator}}/{MODEL}/model"),
    params:
        config=run_params,
    log:
        f"{R}/logs/pretrain/{{generator}}/{MODEL}.log",
    benchmark:
        f"{R}/benchmarks/pretrain/{{generator}}/{MODEL}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=480,
        **HEAVY,
    shell:
        "lthash train --split {input.split} --group train --mode synthetic --synthetic {input.shards}"
        " --out {output.model} --params {params.config} --threads {threads} 2> {log}"


rule finetune:
    input:
        split=rules.split.output.split,
        init=f"{R}/pretrain/{{generator}}/{MODEL}/model",
        shards=mix_shards,
    output:
        model=directory(f"{R}/runs/augmented-{{generator}}/{MODEL}/model"),
    params:
        config=run_params,
    log:
        f"{R}/logs/train/augmented-{{generator}}/{MODEL}.log",
    benchmark:
        f"{R}/benchmarks/train/augmented-{{generator}}/{MODEL}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        **HEAVY,
    shell:
        "lthash train --split {input.split} --group train --mode mix --synthetic {input.shards}"
        " --init {input.init} --out {output.model} --params {params.config}"
        " --threads {threads} 2> {log}"


rule pretrain_then_longtail:
    input:
        split=rules.split.output.split,
        init=f"{R}/pretrain/{{generator}}/{MODEL}/model",
    output:
        model=directory(f"{R}/runs/pretrain_only-{{generator}}/{MODEL}/model"),
    params:
        config=run_params,
    log:
        f"{R}/logs/train/pretrain_only-{{generator}}/{MODEL}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        **HEAVY,
    shell:
        "lthash train --split {input.split} --group train --mode real --init {input.init}"
        " --out {output.model} --params {params.config} --threads {threads} 2> {log}"


rule mix_from_scratch:
    input:
        split=rules.split.output.split,
        shards=mix_shards,
    output:
        model=directory(f"{R}/runs/mix_only-{{generator}}/{MODEL}/model"),
    params:
        config=run_params,
    log:
        f"{R}/logs/train/mix_only-{{generator}}/{MODEL}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=240,
        **HEAVY,
    shell:
        "lthash train --split {input.split} --group train --mode mix --synthetic {input.shards}"
        " --out {output.model} --params {params.config} --threads {threads} 2> {log}"
