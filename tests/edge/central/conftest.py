from tests.fake_dify.fixtures import fake_central, fake_dify, fake_state  # noqa: F401  (fixtures)
