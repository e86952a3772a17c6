# Generation stage: tiny base model (CPU default), balancing plan, per-class
# personalisation, sharded synthesis, and the quality of what was drawn. Priorities put the
# critical path (base and filter judge > plan > personalize > synthesize > pretrain > the arms
# that start from it) ahead of the jobs that can fill idle cores (the real-data arms, encode,
# score). A job of all cores must outrank the plan plus any 1-core job (40 > 35 + 0): the
# scheduler maximises the summed priority of what it starts, and once a 1-core job holds a core
# a job of all cores waits until every core is free.

GEN = config["generate"]
# The filter judge feeds synthesis only when it over-generates (filter_factor > 1); the
# quality stage's judge is a separate instrument and never feeds the method.
FILTER_JUDGE = f"{R}/generate/filter_judge"
FILTERING = GEN["synthesis"]["filter_factor"] > 1


rule base:
    input:
        split=rules.split.output.split,
    output:
        model=directory(f"{R}/generate/base"),
        samples=report(
            f"{R}/generate/base_samples.png",
            caption="../report/base_samples.rst",
            category="Generation",
        ),
    log:
        f"{R}/logs/base.log",
    benchmark:
        f"{R}/benchmarks/base.tsv"
    priority: 40
    conda:
        ENV
    threads: ALL_CORES
    resources:
        **HEAVY,
        mem_mb=8000,
        runtime=240,
    params:
        config=lw.shell_json(**lw.generate_params(config, "base")),
    shell:
        "lthash base --split {input.split} --out {output.model} --samples {output.samples}"
        " --params {params.config} --threads {threads} 2> {log}"


checkpoint plan:
    input:
        summary=rules.split.output.summary,
    output:
        plan=lw.plan_path(R),
    log:
        f"{R}/logs/plan.log",
    priority: 35
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        config=lw.shell_json(**lw.generate_params(config, "plan")),
    shell:
        "lthash plan --split-summary {input.summary} --out {output.plan}"
        " --params {params.config} 2> {log}"


rule personalize:
    input:
        base=BASE_DIR,
        split=rules.split.output.split,
    output:
        concept=directory(lw.concept_folder(R, "{generator}", "{cls}")),
    log:
        f"{R}/logs/personalize/{{generator}}/class{{cls}}.log",
    benchmark:
        f"{R}/benchmarks/personalize/{{generator}}/class{{cls}}.tsv"
    priority: 30
    conda:
        ENV
    threads: 1
    resources:
        **HEAVY,
        mem_mb=8000,
        runtime=240,
    params:
        config=lambda w: lw.shell_json(
            **lw.generate_params(config, "personalize", w.generator)
        ),
    shell:
        "lthash personalize --base {input.base} --split {input.split} --class {wildcards.cls}"
        " --generator {wildcards.generator} --out {output.concept} --params {params.config}"
        " --threads {threads} 2> {log}"


rule personalize_joint:
    input:
        base=BASE_DIR,
        split=rules.split.output.split,
    output:
        concepts=directory(lw.joint_folder(R, "{generator}")),
    log:
        f"{R}/logs/personalize/{{generator}}/joint.log",
    benchmark:
        f"{R}/benchmarks/personalize/{{generator}}/joint.tsv"
    wildcard_constraints:
        generator="|".join(JOINT_GENERATORS) or "no-joint-generator",
    priority: 30
    conda:
        ENV
    threads: 1
    resources:
        **HEAVY,
        mem_mb=8000,
        runtime=480,
    params:
        config=lambda w: lw.shell_json(
            **lw.generate_params(config, "personalize_joint", w.generator)
        ),
    shell:
        "lthash personalize-joint --base {input.base} --split {input.split}"
        " --generator {wildcards.generator} --out {output.concepts} --params {params.config}"
        " --threads {threads} 2> {log}"


rule knowledge:
    input:
        models=lambda w: lw.generator_models(R, w.generator, plan_classes(), BASE_DIR),
        base=BASE_DIR,
        split=rules.split.output.split,
    output:
        metrics=lw.knowledge_path(R, "{generator}"),
    log:
        f"{R}/logs/knowledge/{{generator}}.log",
    benchmark:
        f"{R}/benchmarks/knowledge/{{generator}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        **HEAVY,
        mem_mb=8000,
        runtime=60,
    params:
        config=lw.shell_json(**lw.generate_params(config, "knowledge")),
    shell:
        "lthash knowledge --models {input.models} --base {input.base} --split {input.split}"
        " --generator {wildcards.generator} --out {output.metrics} --params {params.config}"
        " --threads {threads} 2> {log}"


rule filter_judge:
    input:
        split=rules.split.output.split,
    output:
        judge=directory(FILTER_JUDGE),
    log:
        f"{R}/logs/filter_judge.log",
    benchmark:
        f"{R}/benchmarks/filter_judge.tsv"
    priority: 40
    conda:
        ENV
    threads: ALL_CORES
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        config=lw.shell_json(**lw.generate_params(config, "filter_judge")),
    shell:
        "lthash filter-judge --split {input.split} --out {output.judge}"
        " --params {params.config} --threads {threads} 2> {log}"


rule synthesize:
    input:
        concept=lambda w: lw.generator_model(R, w.generator, w.cls, BASE_DIR),
        base=BASE_DIR,
        split=rules.split.output.split,
        plan=rules.plan.output.plan,
        judge=[FILTER_JUDGE] if FILTERING else [],
    output:
        shard=lw.shard_path(
            R, "{generator}/{synthesis}", "{purpose}", "{cls}", "{shard}"
        ),
    log:
        f"{R}/logs/synthesize/{{generator}}/{{synthesis}}/{{purpose}}/class{{cls}}/shard{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/synthesize/{{generator}}/{{synthesis}}/{{purpose}}/class{{cls}}/shard{{shard}}.tsv"
    priority: 20
    conda:
        ENV
    threads: 1
    resources:
        **HEAVY,
        mem_mb=8000,
        runtime=120,
    params:
        config=lambda w: lw.params(config, "synthesize", w),
        judge=f"--judge {FILTER_JUDGE}" if FILTERING else "",
    shell:
        "lthash synthesize --model {input.concept} --base {input.base} --class {wildcards.cls}"
        " --purpose {wildcards.purpose} --shard {wildcards.shard} --plan {input.plan}"
        " --split {input.split} --out {output.shard} {params.judge} --params {params.config}"
        " --threads {threads} 2> {log}"


rule quality:
    input:
        split=rules.split.output.split,
        shards=lambda w: shard_files(f"{w.generator}/{w.synthesis}", "pretrain"),
    output:
        metrics=lw.quality_path(R, "{generator}", "{synthesis}"),
        grid=report(
            f"{R}/generate/{{generator}}/{{synthesis}}/real_vs_synthetic.png",
            caption="../report/real_vs_synthetic.rst",
            category="Generation",
            subcategory="{generator}",
        ),
    log:
        f"{R}/logs/quality/{{generator}}/{{synthesis}}.log",
    benchmark:
        f"{R}/benchmarks/quality/{{generator}}/{{synthesis}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        config=lw.shell_json(**lw.generate_params(config, "quality")),
    shell:
        "lthash quality --split {input.split} --shards {input.shards} --generator {wildcards.generator}"
        " --out {output.metrics} --grid {output.grid} --params {params.config}"
        " --threads {threads} 2> {log}"
