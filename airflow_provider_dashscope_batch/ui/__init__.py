"""The "DashScope batches" page in Airflow's UI (Airflow 3.1+): see :mod:`.plugin`."""
