# Data stage: the dataset -> query / database / balanced and long-tail training sets, and
# the resampled shards (copies of the real long-tail images where the plan puts synthetic ones).


rule split:
    output:
        split=f"{R}/data/split.h5",
        summary=f"{R}/data/split.json",
        figure=report(
            f"{R}/data/class_distribution.png",
            caption="../report/class_distribution.rst",
            category="Data",
        ),
    log:
        f"{R}/logs/split.log",
    benchmark:
        f"{R}/benchmarks/split.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config=lw.params(config, "split"),
    shell:
        "lthash split --out {output.split} --summary {output.summary}"
        " --figure {output.figure} --params {params.config} --threads {threads} 2> {log}"


rule resample:
    input:
        split=rules.split.output.split,
        plan=lw.plan_path(R),
    output:
        shard=lw.shard_path(R, lw.RESAMPLED, "{purpose}", "{cls}", "{shard}"),
    log:
        f"{R}/logs/resample/{{purpose}}/class{{cls}}/shard{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/resample/{{purpose}}/class{{cls}}/shard{{shard}}.tsv"
    priority: 20
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        config=lw.params(config, "resample"),
    shell:
        "lthash resample --split {input.split} --plan {input.plan} --class {wildcards.cls}"
        " --purpose {wildcards.purpose} --shard {wildcards.shard} --out {output.shard}"
        " --params {params.config} --threads {threads} 2> {log}"
