# Evaluation stage: encode database and query with each trained model, then score.

RUN = "{arm}/{method}-{backbone}-{bits}"


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
        mem_mb=8000,
        runtime=60,
        **HEAVY,
    shell:
        "lthash encode --model {input.model} --split {input.split} --out {output.codes}"
        " --threads {threads} 2> {log}"


rule score:
    input:
        codes=f"{R}/runs/{RUN}/codes.h5",
        split=rules.split.output.split,
    output:
        metrics=f"{R}/runs/{RUN}/metrics.json",
        table=f"{R}/runs/{RUN}/metrics.csv",
        plots=directory(f"{R}/runs/{RUN}/plots"),
    params:
        config=lw.shell_json(**config["evaluate"]),
    log:
        f"{R}/logs/score/{RUN}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "lthash score --codes {input.codes} --split {input.split} --out {output.metrics}"
        " --csv {output.table} --plots {output.plots} --params {params.config}"
        " --tag arm={wildcards.arm} --tag method={wildcards.method}"
        " --tag backbone={wildcards.backbone}"
        " --threads {threads} 2> {log}"
