import osvirt.sync


def test_all_names_the_public_api_and_each_is_there():
    assert sorted(osvirt.sync.__all__) == sorted(set(osvirt.sync.__all__))
    for name in osvirt.sync.__all__:
        assert getattr(osvirt.sync, name) is not None
    assert {"Mutex", "Condition", "Barrier", "Semaphore", "SysVSemaphore", "OwnerDead"} <= set(osvirt.sync.__all__)
