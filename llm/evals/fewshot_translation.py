"""fewshot_translation_acc: English words to French in the format of the GPT-3 paper's
in-context learning demonstration ('sea otter => loutre de mer'), four solved pairs then a held-out
word; right when the first line is the translation exactly (case and surrounding space ignored).
fewshot_translation_fitted counts the prompts that fit the context, the only ones scored."""
from llm.evals import fewshot

SHOTS = [('sea otter', 'loutre de mer'), ('cheese', 'fromage'), ('house', 'maison'), ('water', 'eau')]
WORDS = [('cat', 'chat'), ('dog', 'chien'), ('bread', 'pain'), ('book', 'livre'), ('tree', 'arbre'),
         ('sun', 'soleil'), ('moon', 'lune'), ('apple', 'pomme'), ('flower', 'fleur'), ('horse', 'cheval'),
         ('milk', 'lait'), ('friend', 'ami'), ('king', 'roi'), ('queen', 'reine'), ('garden', 'jardin'),
         ('door', 'porte'), ('window', 'fenêtre'), ('sea', 'mer'), ('bird', 'oiseau'), ('fish', 'poisson'),
         ('red', 'rouge'), ('green', 'vert'), ('night', 'nuit'), ('day', 'jour'), ('hand', 'main'),
         ('heart', 'cœur'), ('school', 'école'), ('mother', 'mère'), ('father', 'père'), ('snow', 'neige'),
         ('rain', 'pluie'), ('wine', 'vin')]
TEMPLATE = '{q} => {a}'


def evaluate(ctx) -> dict:
  words = WORDS[:ctx.count(len(WORDS))]
  prompts = ['Translate English to French:\n\n' + fewshot.prompt(SHOTS, english, TEMPLATE) for english, _ in words]
  lines = fewshot.first_lines(ctx, prompts, 12)
  return fewshot.accuracy('fewshot_translation', [None if line is None else line.lower() == french
                                                   for line, (_, french) in zip(lines, words)])
