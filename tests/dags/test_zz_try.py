def test_main(load_example, states):
    mod = load_example("example_dashscope_batch")
    dr = mod.dag.test()
    print(dr.state, states(dr))
    assert 0
