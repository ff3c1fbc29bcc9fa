"""Evaluation code: how the benchmarks and the model research measure mailmoat.

Shared by bench/ (the benchmarks whose figures docs/benchmarks.md gives) and by the research
programs here, each run as `python -m mailmoat.evaluation.<name>`:

- `accuracy`: grouped cross-validation of the tier-1 content model alone;
- `deep_cv`: the fine-tuned tier 2 against tier 1 on the same folds;
- `deep_compare`: tier-2 fine-tuning runs side by side;
- `deep_eval`: tier-2 heads on the frozen encoder, on a held-out split;
- `network_cv`: non-linear alternatives to tier 1 over its features;
- `label_audit`: how much of the pipeline's error is the corpora's labels;
- `lesson_similarity`: how close ham gets to spam, for `[content] lesson_similarity`;
- `phishing_families`: the URL and impersonation families on the corpora, by half;
- `feedback`: learning from releases and reports on a source never seen in training;
- `tradeoff_plot`: draws the detection / false-positive curves of the results.

The shared modules: `corpus` (finding and reading the corpora), `folds` (the grouped
cross-validation every program uses), `verdicts` (score to action through the product's
own `mailmoat.policy.decide`), `tier2` (the fine-tuning run's stored scores as the gateway
would use them), `report` (formatting and writing results), `messages`, `dnsserver`, `clamd`
(what the latency benchmarks scan and answer with), `modern` (today's legitimate mail).

Importing a module does no work; programs do theirs in `main()`.
"""
