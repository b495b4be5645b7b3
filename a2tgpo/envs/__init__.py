"""The agent's environment: tag parsing, search tools, rewards, and the synthetic world.

    parser.py           parse_action (one turn) and extract_answer (a whole response)
    rewards.py          SQuAD-normalized EM / token F1, score_response with a format penalty
    retrievers.py       Passage, the Retriever protocol, HttpRetriever (Search-R1 server)
    bm25.py             BM25Retriever (bm25s) with an on-disk index cache
    tools.py            SearchTool (Search-R1 observation format; never raises); search.py: make_search_tool
    prompting.py        PromptTemplate, TEMPLATES, render_prompts, wrap_observation
    synthetic_world.py  entities, facts and passages of a seeded synthetic world
    synthetic.py        SyntheticWorld: question splits, demonstrations, prompt rows

Nothing is imported here, so `import a2tgpo.envs.parser` stays light (no bm25s, no httpx).
"""
