"""
Token and cost estimates before a batch is sent, budget and thinking-mode checks, and the actual cost after.

* :mod:`~airflow_provider_dashscope_batch.cost.pricing`: the shipped price table (``prices.json``, with
  its sources and date) and its per-connection / per-task overrides;
* :mod:`~airflow_provider_dashscope_batch.cost.tokens`: offline token counts (the Qwen tokenizer, or the
  documented approximation);
* :mod:`~airflow_provider_dashscope_batch.cost.estimate`: the streaming preflight estimate and the
  first-line checks;
* :mod:`~airflow_provider_dashscope_batch.cost.budget`: the estimate's figures, the budget policy and the
  check errors;
* :mod:`~airflow_provider_dashscope_batch.cost.actual`: the billed cost of finished requests.

See ``docs/cost.rst``.
"""
