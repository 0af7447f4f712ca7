"""
Qwen through common.ai's ``LLMBatchOperator`` / ``@task.llm_batch`` (``model_id="dashscope:<model>"``).

Needs the ``common-ai`` extra (``apache-airflow-providers-common-ai``); common.ai finds
:class:`~airflow_provider_dashscope_batch.common_ai.adapter.DashScopeBatchAdapter` through the
``airflow.providers.common.ai.batch_adapters`` entry point, so nothing here is imported unless a
``dashscope:`` model is used.
"""
