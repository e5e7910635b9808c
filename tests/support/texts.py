"""A query and three documents whose ranking every reranker here agrees on: [1, 2, 0]."""

QUERY = "how do I read a JSON file in Python"
DOCS = [
    "Cooking pasta: boil salted water, add the pasta and cook for nine minutes.",
    "In Python, json.load(f) parses a JSON file opened with open('data.json') into a dict.",
    "Jackson's ObjectMapper reads JSON into Java objects with readValue().",
]
