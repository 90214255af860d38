"""Kafka's wire protocol, sans I/O: bytes in, messages out.

Nothing here touches a socket, asyncio, the engine or the compiled module (the layer rule in
tests/test_layers.py keeps it so). ``frames`` splits a byte stream into requests and reads
their headers; ``schema`` decodes and encodes any message from Kafka's own message schemas
(through kio); ``hot`` holds the hand-specialised codecs of the messages on the data path
(ApiVersions, Metadata, Produce, Fetch, ListOffsets), checked byte for byte against
``schema`` by the tests; ``apis`` is the table of APIs and versions we offer.
"""
