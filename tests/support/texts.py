"""Shared test texts.

QUERY and DOCS: a query and three documents whose ranking every reranker here agrees on: [1, 2, 0].
SKILLET_*: the cache and telemetry tests' query and eight documents (relevant and not, mixed).
ADAPTER_*: the LangChain and LlamaIndex tests' query, four texts and the one that answers it.
PAIRS_*: the serve tests' query and four documents (one Chinese) scored against the references.
"""

QUERY = "how do I read a JSON file in Python"
DOCS = [
    "Cooking pasta: boil salted water, add the pasta and cook for nine minutes.",
    "In Python, json.load(f) parses a JSON file opened with open('data.json') into a dict.",
    "Jackson's ObjectMapper reads JSON into Java objects with readValue().",
]

SKILLET_QUERY = "how do I keep a cast iron skillet from rusting"
SKILLET_DOCS = [
    "Dry a cast iron skillet right after washing and rub it with a thin film of oil.",
    "Seasoning is a layer of polymerised oil that protects cast iron from rust.",
    "Stainless steel pans are dishwasher safe and need no seasoning.",
    "The Eiffel Tower was built for the 1889 World's Fair in Paris.",
    "Soaking cast iron in water overnight invites rust; scrub it and dry it on the stove.",
    "Bananas are rich in potassium and make a quick breakfast.",
    "A rusty skillet can be saved: scour the rust, wash, dry and season it again.",
    "Python decorators wrap a function to change what it does.",
]

ADAPTER_QUERY = "how do I read a JSON file in Python"
ADAPTER_TEXTS = [
    "Cooking pasta: boil salted water and cook the noodles for ten minutes.",
    "In Java, the Jackson library maps JSON files to objects.",
    "To read a JSON file in Python, open it and call json.load on the file object.",
    "Python's csv module reads comma-separated files row by row.",
]
ADAPTER_JSON_DOC = 2  # the index of the text that answers ADAPTER_QUERY

PAIRS_QUERY = "how do I read a JSON file in Python"
PAIRS_DOCS = [
    "Use json.load to read a JSON file into a dict.",
    "The csv module parses comma separated files.",
    "Boil the pasta for ten minutes.",
    "上海是中国的一个城市。",
]
