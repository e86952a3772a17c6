# Data stage: the dataset -> query / database / balanced and long-tail training sets.


rule split:
    output:
        split=f"{R}/data/split.h5",
        summary=f"{R}/data/split.json",
        figure=report(
            f"{R}/data/class_distribution.png",
            caption="../report/class_distribution.rst",
            category="Data",
        ),
    params:
        config=lw.shell_json(dataset=config["dataset"], split=config["split"]),
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
    shell:
        "lthash split --out {output.split} --summary {output.summary}"
        " --figure {output.figure} --params {params.config} --threads {threads} 2> {log}"
