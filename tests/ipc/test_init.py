import osvirt.ipc


def test_all_names_exist_and_are_public():
    for name in osvirt.ipc.__all__:
        assert hasattr(osvirt.ipc, name), name
    assert len(set(osvirt.ipc.__all__)) == len(osvirt.ipc.__all__)
