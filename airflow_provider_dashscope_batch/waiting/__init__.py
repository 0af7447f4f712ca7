"""
Waiting for DashScope batches: the wait protocol, the shared status reader and the late-copy watch.

The layer between the Airflow classes (operators, sensor, triggers) and the client: arrows point down
only, from Airflow to here to :mod:`~airflow_provider_dashscope_batch.client`. Nothing here imports
Airflow.

* :mod:`.protocol` -- how one wait goes and ends (poll schedule, outcome policy, the event).
* :mod:`.reader` -- grouped status reads: one list request answers up to 20 waits.
* :mod:`.late` -- what a wait does after an ambiguous create or upload: it looks for a late copy
  until the ambiguity window closes and cancels (or deletes) it.
"""
