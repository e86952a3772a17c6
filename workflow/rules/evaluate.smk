# Evaluation stage: encode database and query with each trained model, then score. A run's
# identity (arm, generator, synthesis, method, backbone) goes into its metrics as tags, from
# the experiment's run list, so the report never parses a path.

RUN = lw.RUN
LABELLED = lw.LABELLED_MODEL


rule encode:
    input:
        model=f"{R}/{RUN}/{lw.RUN_MODEL}",
        split=rules.split.output.split,
    output:
        codes=f"{R}/{RUN}/{lw.RUN_CODES}",
        # what lthash search reads beside the codes (the database's nearest-neighbour profile)
        profile=f"{R}/{RUN}/{lw.RUN_PROFILE}",
    log:
        f"{R}/logs/encode/{LABELLED}.log",
    benchmark:
        f"{R}/benchmarks/encode/{LABELLED}.tsv"
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
        "lthash encode --model {input.model} --split {input.split} --out {output.codes} --profile"
        " --params {params.config} --threads {threads} 2> {log}"


rule score:
    input:
        codes=f"{R}/{RUN}/{lw.RUN_CODES}",
        split=rules.split.output.split,
    output:
        metrics=f"{R}/{RUN}/metrics.json",
        table=f"{R}/{RUN}/metrics.csv",
        plots=directory(f"{R}/{RUN}/plots"),
    log:
        f"{R}/logs/score/{LABELLED}.log",
    benchmark:
        f"{R}/benchmarks/score/{LABELLED}.tsv"
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
