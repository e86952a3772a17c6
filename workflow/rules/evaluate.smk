# Evaluation stage: encode database and query with each trained model, then score. A run's
# identity (arm, generator, synthesis, method, backbone) goes into its metrics as tags, from
# the experiment's run list, so the report never parses a path.

RUN = "{label}/{method}-{backbone}-{bits}/seed{seed}"


rule encode:
    input:
        model=f"{R}/runs/{RUN}/model",
        split=rules.split.output.split,
    output:
        codes=f"{R}/runs/{RUN}/codes.h5",
    log:
        f"{R}/logs/encode/{RUN}.log",
    benchmark:
        f"{R}/benchmarks/encode/{RUN}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        **HEAVY,
        mem_mb=8000,
        runtime=60,
    params:
        config=lw.params(config, "encode"),
    shell:
        "lthash encode --model {input.model} --split {input.split} --out {output.codes}"
        " --params {params.config} --threads {threads} 2> {log}"


rule score:
    input:
        codes=f"{R}/runs/{RUN}/codes.h5",
        split=rules.split.output.split,
    output:
        metrics=f"{R}/runs/{RUN}/metrics.json",
        table=f"{R}/runs/{RUN}/metrics.csv",
        plots=directory(f"{R}/runs/{RUN}/plots"),
    log:
        f"{R}/logs/score/{RUN}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config=lw.params(config, "score"),
        tags=run_tags,
    shell:
        "lthash score --codes {input.codes} --split {input.split} --out {output.metrics}"
        " --csv {output.table} --plots {output.plots} --params {params.config} {params.tags}"
        " --threads {threads} 2> {log}"
