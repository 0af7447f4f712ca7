"""The API's endpoints, each call an I/O-free flow over a :class:`~.._core.ClientCore` (as openai-python
keeps its endpoints in ``resources/``); the clients declare their methods from these flows."""
