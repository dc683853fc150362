#!/usr/bin/env python3
"""The official `openai` client against `demiurgic serve`, unchanged but for base_url.

usage: python scripts/openai_client_check.py BASE_URL API_KEY MODEL
Exits 0 when every check holds; an AssertionError (exit 1) names the one that did not.
"""
import json
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

# tool calling: required, named, auto, streamed, and the result sent back
tools = [
    {"type": "function", "function": {"name": "get_weather", "description": "Current weather of a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]}}},
    {"type": "function", "function": {"name": "add", "description": "Add two integers",
     "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                    "required": ["a", "b"]}}},
]


def valid(name, arguments):
    # the functions' schemas, checked by hand: required keys, types, enum
    args = json.loads(arguments)
    if name == "get_weather":
        return isinstance(args.get("city"), str) and args.get("unit") in ("celsius", "fahrenheit")
    return name == "add" and type(args.get("a")) is int and type(args.get("b")) is int


q = [{"role": "user", "content": "What is the weather in Paris? And what is 2 plus 3?"}]
r = c.chat.completions.create(model=model, messages=q, tools=tools, tool_choice="required", max_tokens=96, temperature=0)
ch = r.choices[0]
assert ch.finish_reason == "tool_calls" and ch.message.content is None and ch.message.tool_calls, r
assert all(valid(t.function.name, t.function.arguments) for t in ch.message.tool_calls), r
first_call = ch.message.tool_calls[0]
r = c.chat.completions.create(model=model, messages=q, tools=tools, max_tokens=96, temperature=0,
                              tool_choice={"type": "function", "function": {"name": "add"}})
calls = r.choices[0].message.tool_calls
assert calls and all(t.function.name == "add" and valid("add", t.function.arguments) for t in calls), r
r = c.chat.completions.create(model=model, messages=q, tools=tools, tool_choice="auto", max_tokens=48, temperature=0)
m = r.choices[0].message
assert (m.content and not m.tool_calls) or all(valid(t.function.name, t.function.arguments) for t in m.tool_calls), r
stream = c.chat.completions.create(model=model, messages=q, tools=tools, tool_choice="required", max_tokens=96,
                                   temperature=0, stream=True)
acc, finish = {}, None
for chunk in stream:
    for choice in chunk.choices:
        for d in choice.delta.tool_calls or []:
            e = acc.setdefault(d.index, {"name": "", "arguments": ""})
            e["name"] += (d.function.name or "") if d.function else ""
            e["arguments"] += (d.function.arguments or "") if d.function else ""
        finish = choice.finish_reason or finish
assert finish == "tool_calls" and acc and all(valid(e["name"], e["arguments"]) for e in acc.values()), acc
assert acc[0]["name"] == first_call.function.name and acc[0]["arguments"] == first_call.function.arguments
back = q + [
    {"role": "assistant", "content": None, "tool_calls": [first_call.model_dump()]},
    {"role": "tool", "tool_call_id": first_call.id, "content": "18 degrees, sunny"},
]
r = c.chat.completions.create(model=model, messages=back, tools=tools, tool_choice="none", max_tokens=24, temperature=0)
assert r.choices[0].message.content and not r.choices[0].message.tool_calls, r

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
