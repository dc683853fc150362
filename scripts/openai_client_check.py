#!/usr/bin/env python3
"""The official `openai` client against `demiurgic serve`, unchanged but for base_url.

usage: python scripts/openai_client_check.py BASE_URL API_KEY MODEL
Exits 0 when every check holds; an AssertionError (exit 1) names the one that did not.
"""
import sys

import openai

base, key, model = sys.argv[1:4]
c = openai.OpenAI(base_url=base, api_key=key, max_retries=0)

ids = [m.id for m in c.models.list().data]
assert ids == [model], ids

r = c.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
assert r.object == "text_completion" and len(r.choices) == 1, r
assert r.choices[0].text and r.choices[0].finish_reason in ("stop", "length"), r
assert r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

msgs = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Name a primary colour."}]
chat = c.chat.completions.create(model=model, messages=msgs, max_tokens=16, temperature=0)
text = chat.choices[0].message.content
assert chat.choices[0].message.role == "assistant" and text, chat

stream = c.chat.completions.create(
    model=model, messages=msgs, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True}
)
pieces, usage, finish = [], None, None
for ch in stream:
    if ch.usage:
        usage = ch.usage
    for choice in ch.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
assert "".join(pieces) == text, ("".join(pieces), text)
assert finish in ("stop", "length") and usage and usage.completion_tokens == chat.usage.completion_tokens

a = c.completions.create(model=model, prompt="Once upon a time", max_tokens=10, temperature=0.9, n=2, seed=11)
b = c.completions.create(model=model, prompt="Once upon a time", max_tokens=10, temperature=0.9, n=2, seed=11)
assert [x.text for x in a.choices] == [x.text for x in b.choices] and len(a.choices) == 2

r = c.completions.create(model=model, prompt="def f(x):", max_tokens=40, temperature=0, stop=["\n"])
assert "\n" not in r.choices[0].text and r.choices[0].finish_reason == "stop", r

# streamed log-probabilities, every alternative a number
stream = c.chat.completions.create(
    model=model, messages=msgs, max_tokens=8, temperature=0, stream=True, logprobs=True, top_logprobs=2
)
entries = [e for ch in stream for ch_ in ch.choices if ch_.logprobs and ch_.logprobs.content for e in ch_.logprobs.content]
assert entries and all(len(e.top_logprobs) == 2 and e.logprob <= 0 for e in entries), entries
# n > 1 at temperature 0: identical choices; echo: the prompt before the completion
r = c.completions.create(model=model, prompt="Hi", max_tokens=4, temperature=0, n=2)
assert len(r.choices) == 2 and r.choices[0].text == r.choices[1].text, r
r = c.completions.create(model=model, prompt="The capital of France is", max_tokens=4, temperature=0, echo=True)
assert r.choices[0].text.startswith("The capital of France is"), r

for call, exc in [
    (lambda: c.completions.create(model=model, prompt="hi", temperature=3), openai.BadRequestError),
    (lambda: c.completions.create(model="no-such-model", prompt="hi"), openai.NotFoundError),
    (
        lambda: openai.OpenAI(base_url=base, api_key="wrong", max_retries=0).models.list(),
        openai.AuthenticationError,
    ),
]:
    try:
        call()
        raise AssertionError(f"expected {exc.__name__}")
    except exc as e:
        assert e.body and "message" in e.body, e.body

print("openai client: all checks passed")
