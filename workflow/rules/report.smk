# Report stage: the papers' tables and figures from every run, as Markdown and for
# `snakemake --report report.html`.


rule report:
    input:
        metrics=[f"{run.directory(R)}/metrics.json" for run in RUNS],
        quality=(
            lw.quality_files(config)
            if config["experiment"]["quality"]
            else []
        ),
        summary=rules.split.output.summary,
        figure=rules.split.output.figure,
    output:
        markdown=report(f"{R}/report.md", caption="../report/report.rst", category="Report"),
        table=report(f"{R}/tables/map.csv", caption="../report/map_table.rst", category="Report"),
    params:
        config=lw.shell_json(report=config["report"], experiment=config["experiment"]),
    log:
        f"{R}/logs/report.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "lthash report --metrics {input.metrics}"
        " --quality {input.quality} --split-summary {input.summary} --out {output.markdown}"
        " --table {output.table} --params {params.config} 2> {log}"
