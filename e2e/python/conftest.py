import pytest

import bed


@pytest.fixture(scope="session")
def source():
    return bed.side("source")


@pytest.fixture(scope="session")
def target():
    return bed.side("target")


@pytest.fixture
def connect():
    """Opens driver sessions and shuts their clusters down after the test."""
    clusters = []

    def open_session(endpoint, **kwargs):
        cluster = endpoint.cluster(**kwargs)
        clusters.append(cluster)
        return cluster.connect()

    yield open_session
    for cluster in clusters:
        cluster.shutdown()
