import json

import pytest

from llm.data import gsm8k

NATALIA_QUESTION = ('Natalia sold clips to 48 of her friends in April, and then she sold half as '
                    'many clips in May. How many clips did Natalia sell altogether in April and '
                    'May?')
NATALIA_SOLUTION = ('Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = '
                    '<<48+24=72>>72 clips altogether in April and May.\n')


def test_parse_splits_solution_and_final_answer():
  item = gsm8k.parse(f'  {NATALIA_QUESTION}\n', NATALIA_SOLUTION + '#### 72')
  assert item == gsm8k.Item(NATALIA_QUESTION, NATALIA_SOLUTION, '72')
  assert gsm8k.parse('q', 'So 1,000 + 80 = <<1000+80=1080>>1,080\n#### 1,080').final_answer == '1080'
  assert gsm8k.parse('q', 'It is 4 apples.') is None  # no final answer


def test_annotations_give_expression_result_and_the_span_to_replace():
  steps = gsm8k.annotations(NATALIA_SOLUTION)
  assert [(s.expression, s.result) for s in steps] == [('48/2', '24'), ('48+24', '72')]
  # Each span covers the annotation and the number the prose repeats after it.
  assert [NATALIA_SOLUTION[s.start:s.end] for s in steps] == ['<<48/2=24>>24', '<<48+24=72>>72']
  solution = 'He pays 0.2 x 50 = $<<0.2 x 50=10>>10 and <<150*150=22500>>22,500 or <<2*3=6>>7.'
  steps = gsm8k.annotations(solution)
  assert [s.expression for s in steps] == ['0.2 * 50', '150*150', '2*3']  # GSM8K's 'x' is '*'
  assert [solution[s.start:s.end] for s in steps] == [
      '<<0.2 x 50=10>>10', '<<150*150=22500>>22,500', '<<2*3=6>>']  # 7 is no repeat of 6
  assert gsm8k.annotations('It is <<2+2>>4.') is None  # an annotation without a result


def test_read_names_a_record_that_is_no_gsm8k_item(tmp_path):
  (tmp_path / 'gsm8k').mkdir()
  lines = [{'question': 'q', 'answer': 'a\n#### 1'}, {'question': 'q', 'answer': 'no final'}]
  (tmp_path / 'gsm8k' / 'test.jsonl').write_text('\n'.join(map(json.dumps, lines)))
  with pytest.raises(ValueError, match=r'test\.jsonl: record 2 is no GSM8K item'):
    list(gsm8k.read(tmp_path, 'test'))
  with pytest.raises(FileNotFoundError, match=r'gsm8k/train\.jsonl.*data\.dir'):
    list(gsm8k.read(tmp_path, 'train'))
  with pytest.raises(ValueError, match="split 'dev' is unknown"):
    list(gsm8k.read(tmp_path, 'dev'))


def test_read_the_shared_splits(data_dir):
  train, test = (list(gsm8k.read(data_dir, split)) for split in gsm8k.SPLITS)
  assert (len(train), len(test)) == (7473, 1319)
  assert train[0] == gsm8k.Item(NATALIA_QUESTION, NATALIA_SOLUTION, '72')
  assert train[345].final_answer == '1080'  # '#### 1,080'
  assert test[489].final_answer == '-10'
