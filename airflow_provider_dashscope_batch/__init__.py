"""Apache Airflow provider for the DashScope OpenAI-compatible Batch API."""

__version__ = "0.1.0"
