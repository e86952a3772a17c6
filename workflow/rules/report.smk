# Report stage: the tables that answer the question, the papers' tables, the retrieval
# pictures and every run's figures, as Markdown and for `snakemake --report report.html`.

import lthash.report.items as ri

REPORT_SETTINGS = ri.settings_of(RUNS)


rule report:
    input:
        metrics=[f"{run.directory(R)}/metrics.json" for run in RUNS],
        codes=[f"{run.directory(R)}/{lw.RUN_CODES}" for run in RUNS],
        split=rules.split.output.split,
        quality=(lw.quality_files(config) if config["experiment"]["quality"] else []),
        knowledge=lw.knowledge_files(config),
        summary=rules.split.output.summary,
        figure=rules.split.output.figure,
        # every run's PR / P@k (score) and training curves (train) in the HTML report
        plots=[
            report(
                f"{run.directory(R)}/plots",
                patterns=["{figure}.png"],
                caption="../report/run_figure.rst",
                category="Runs",
                subcategory=ri.figure_subcategory,
                labels=ri.run_labels(run),
            )
            for run in RUNS
        ],
        models=[
            report(
                f"{run.directory(R)}/{lw.RUN_MODEL}",
                patterns=["{figure}.png"],
                caption="../report/run_figure.rst",
                category="Runs",
                subcategory=ri.figure_subcategory,
                labels=ri.run_labels(run),
            )
            for run in RUNS
        ],
    output:
        # the verdict sentence alone: the first category of the HTML report (categories sort by name)
        verdict=report(
            f"{R}/tables/{ri.VERDICT}",
            caption="../report/verdict.rst",
            category="Answer",
            labels={"item": "verdict"},
        ),
        markdown=report(
            f"{R}/report.md", caption="../report/report.rst", category="Report"
        ),
        # the HTML report's first page (the Snakefile's report: once it exists)
        home=f"{R}/tables/{ri.HOME}",
        table=report(
            f"{R}/tables/map.csv",
            caption="../report/map_table.rst",
            category="Tables",
            labels={"table": "every run, every cut-off (CSV)"},
        ),
        html=[
            report(
                f"{R}/tables/{name}.html",
                caption=f"../report/{name}.rst",
                category="Tables",
                labels={"table": ri.TABLE_TITLES[name]},
            )
            for name in ri.TABLE_NAMES
        ],
        csv=[f"{R}/tables/{name}.csv" for name in ri.TABLE_NAMES],
        retrieval=[
            report(
                ri.figure_path(f"{R}/figures", "retrieval", setting),
                caption="../report/retrieval.rst",
                category="Retrieval",
                subcategory="top results of head and tail queries",
                labels=ri.setting_labels(setting),
            )
            for setting in REPORT_SETTINGS
        ],
        seeds=[
            report(
                ri.figure_path(f"{R}/figures", "seeds", setting),
                caption="../report/seeds.rst",
                category="Answer",
                subcategory="mAP of every seed",
                labels=ri.setting_labels(setting),
            )
            for setting in REPORT_SETTINGS
        ],
        per_class=[
            report(
                ri.figure_path(f"{R}/figures", "per_class_ap", setting),
                caption="../report/per_class_ap.rst",
                category="Retrieval",
                subcategory="per-class AP of every arm",
                labels=ri.setting_labels(setting),
            )
            for setting in REPORT_SETTINGS
        ],
    log:
        f"{R}/logs/report.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        config=lw.params(config, "report"),
        tables=lambda w, output: os.path.dirname(output.table),
        figures=lambda w, output: os.path.dirname(output.retrieval[0]),
        # read, not an input: every job that writes one has finished before the report
        benchmarks=f"{R}/benchmarks",
        server_log=f"{R}/logs/forkserver.log",
    shell:
        "lthash report --metrics {input.metrics} --codes {input.codes} --split {input.split}"
        " --quality {input.quality} --knowledge {input.knowledge} --split-summary {input.summary}"
        " --benchmarks {params.benchmarks} --server-log {params.server_log} --out {output.markdown} --table {output.table}"
        " --tables {params.tables} --figures {params.figures} --params {params.config}"
        " 2> {log}"
