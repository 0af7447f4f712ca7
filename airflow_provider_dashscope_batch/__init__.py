"""Apache Airflow provider for the DashScope OpenAI-compatible Batch API."""

__version__ = "0.2.0"
